"""Shim: `python ingest/load_gallery.py ...` runs `isr.ingest.load_gallery` (kept so the documented command works)."""

from isr.ingest.load_gallery import main

if __name__ == "__main__":
    main()
