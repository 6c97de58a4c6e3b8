"""isr.plugin.embedded"""
