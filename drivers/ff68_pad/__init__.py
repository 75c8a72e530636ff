"""The `ff68_pad` device profile."""
