"""isr.plugin.store"""
