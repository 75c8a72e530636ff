"""The `zk_push` device profile."""
