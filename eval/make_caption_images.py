"""Shim: `python eval/make_caption_images.py ...` is `isr eval make-caption-images ...` (kept so the documented command works)."""

from isr.app.eval_cli import make_caption_images

if __name__ == "__main__":
    make_caption_images(prog_name="python eval/make_caption_images.py")
