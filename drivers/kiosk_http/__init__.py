"""The `kiosk_http` device profile."""
