//! A real `redis-server` on a loopback port, started and stopped by tests.
