"""isr.encoders"""
