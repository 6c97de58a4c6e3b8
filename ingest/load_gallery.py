"""Shim: `python ingest/load_gallery.py ...` is `isr load ...` (kept so the documented command works)."""

from isr.app.load import main

if __name__ == "__main__":
    main(prog_name="python ingest/load_gallery.py")
