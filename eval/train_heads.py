"""Shim: `python eval/train_heads.py ...` is `isr eval train-heads ...` (the keyword-head stage)."""

from isr.app.screen_cli import train_heads_cmd

if __name__ == "__main__":
    train_heads_cmd(prog_name="python eval/train_heads.py")
