"""isr.plugin.es"""
