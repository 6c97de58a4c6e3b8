"""isr.app: the command line, the demo, the server start-up and the script shims."""
