"""isr.plugin"""
