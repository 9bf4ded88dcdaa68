"""Moving messages between node processes: codec, shared-memory slots, ZeroMQ edges."""
