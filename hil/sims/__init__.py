"""Device simulators: Modbus (pymodbus' real server), NMEA and TTS over TCP."""
