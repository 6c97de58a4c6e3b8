"""isr.plugin.http"""
