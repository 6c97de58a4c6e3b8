#!/usr/bin/env bash
# From an empty folder to a searchable index of 200 generated photos, with a tiny bundle.
# Usage: docs/results/photo_path.sh WORKDIR   (run from the repository root, venv active)
set -euo pipefail
W=${1:?workdir}; rm -rf "$W"; mkdir -p "$W"
export OMP_NUM_THREADS=1
PY=${PY:-python}
t() { local s=$(date +%s.%N); "$@"; echo "TIME $(echo "$(date +%s.%N) - $s" | bc) s: ${*:1:4}" >&2; }
T0=$(date +%s.%N)
# a random tiny ViT saved as a local Hugging Face checkpoint (nothing is downloaded)
t $PY -c "
import torch; from transformers import ViTConfig, ViTModel, ViTImageProcessor
torch.manual_seed(0)
ViTModel(ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                   image_size=64, patch_size=8)).save_pretrained('$W/vit')
ViTImageProcessor(size={'height': 64, 'width': 64}).save_pretrained('$W/vit')"
t $PY -c "from isr.ingest.toy_photos import write_toy_photos; write_toy_photos('$W/photos', 200, seed=0)"
t $PY -m isr.app.cli --threads 1 train --images "$W/photos" --captions "$W/photos-captions.jsonl" \
  --image-backbone "$W/vit" --k 16 --out "$W/run" --recipe paper --preset tiny --min-images 10 \
  --config '{"device": "cpu", "progress": false}'
t $PY ingest/load_gallery.py --threads 1 images "$W/photos" --bundle "$W/run/bundle" \
  --index "$W/indices/photos" --fields "$W/photos-captions.jsonl" --no-progress
t $PY -m isr.app.cli search "$W/indices/photos" --text "a big red circle on a sky background" \
  --bundle "$W/run/bundle" --size 5
echo "TOTAL $(echo "$(date +%s.%N) - $T0" | bc) s (empty folder -> searchable index)" >&2
