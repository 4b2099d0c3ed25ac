"""What every device server stands on: the device base class, hardware links, config files."""
