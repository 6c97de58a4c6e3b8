"""Shim: `python eval/make_caption_images.py ...` runs `isr.eval.make_caption_images` (kept so the documented command works)."""

from isr.eval.make_caption_images import main

if __name__ == "__main__":
    main()
