"""isr.eval"""
