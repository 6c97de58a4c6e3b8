"""isr.ingest"""
