"""Protocol adapters: Modbus (pymodbus), serial (pyserial) and MQTT (paho-mqtt).

Each third-party protocol library is imported by exactly one module here; drivers and the
uplink get these transports injected and see only the errors of ``edge.errors``.
"""
