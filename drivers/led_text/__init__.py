"""The `led_text` device profile."""
