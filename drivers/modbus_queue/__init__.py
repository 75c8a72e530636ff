"""The `modbus_queue` device profile."""
