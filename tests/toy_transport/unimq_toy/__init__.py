"""``toy://NAME``: a deliberately small in-process transport written only against unimq's SPI."""
