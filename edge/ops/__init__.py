"""Operations: metrics, status page, HTTP site, systemd notify, logs."""
