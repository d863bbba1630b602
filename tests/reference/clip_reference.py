"""Reference outputs from Hugging Face transformers (the implementation orchestrate must match).

Usage: clip_reference.py OUT_DIR TOKENIZER_DIR PROMPTS_JSON

Writes, under OUT_DIR:
  model_<i>/                 tiny random CLIPModel(s) saved with save_pretrained (safetensors)
  model_<i>/reference.safetensors   pixel_values, input_ids, attention_mask, image_features,
                                    text_features, text_features_77 (same prompts padded to 77)
  vision_<i>/                a CLIPVisionModel (vision-only checkpoint) with other weights
  vision_<i>/reference.safetensors  image_features of base model_<i> with this vision tower
  tokens.json                CLIPTokenizerFast ids for every prompt in PROMPTS_JSON
  images/*.png + preprocess_<size>.safetensors  CLIPImageProcessor outputs before normalisation
Run by tests/clip_parity.rs with the test virtualenv's python.
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel,
                          CLIPTokenizerFast, CLIPVisionModel)

out, tok_dir, prompts_path = sys.argv[1:4]
torch.manual_seed(0)
torch.backends.cuda.matmul.allow_tf32 = False

tok = CLIPTokenizerFast.from_pretrained(tok_dir)
prompts = json.load(open(prompts_path))
ids = [tok(p, truncation=True, max_length=77)["input_ids"] for p in prompts]
json.dump({"prompts": prompts, "ids": ids}, open(os.path.join(out, "tokens.json"), "w"))

eos = tok.convert_tokens_to_ids("<|endoftext|>")
bos = tok.convert_tokens_to_ids("<|startoftext|>")
vocab = len(tok)

CONFIGS = [
    dict(t=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
         v=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                image_size=32, patch_size=8), proj=16),
    dict(t=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=3,
                hidden_act="gelu"),
         v=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=8,
                image_size=48, patch_size=16, hidden_act="gelu"), proj=24),
    dict(t=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=1, num_attention_heads=2),
         v=dict(hidden_size=40, intermediate_size=80, num_hidden_layers=4, num_attention_heads=5,
                image_size=28, patch_size=14), proj=32),
]

texts = [p for p in prompts[:7]] + ["a", "a much longer prompt with several words in it, to pad the others."]
for i, spec in enumerate(CONFIGS):
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos,
                         max_position_embeddings=77, **spec["t"]),
        vision_config=spec["v"], projection_dim=spec["proj"])
    model = CLIPModel(config).eval()
    # Make LayerNorms and biases non-trivial so a missing one would show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    d = os.path.join(out, f"model_{i}")
    model.save_pretrained(d, safe_serialization=True)
    size = spec["v"]["image_size"]
    pixels = torch.randn(5, 3, size, size)
    batch = tok(texts, padding=True, return_tensors="pt")
    batch77 = tok(texts, padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        ref = {
            "pixel_values": pixels,
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "image_features": model.get_image_features(pixel_values=pixels),
            "text_features": model.get_text_features(**batch),
            "text_features_77": model.get_text_features(**batch77),
        }
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(d, "reference.safetensors"))

    vision = CLIPVisionModel(config.vision_config).eval()
    vd = os.path.join(out, f"vision_{i}")
    vision.save_pretrained(vd, safe_serialization=True)
    model.vision_model.load_state_dict(vision.vision_model.state_dict())
    with torch.no_grad():
        save_file({"image_features": model.get_image_features(pixel_values=pixels).contiguous()},
                  os.path.join(vd, "reference.safetensors"))

# Preprocessing: photo-like (smooth gradients + shapes) and noise images in several modes/sizes.
img_dir = os.path.join(out, "images")
os.makedirs(img_dir, exist_ok=True)
rng = np.random.default_rng(0)
names = []
def add(name, img):
    img.save(os.path.join(img_dir, name))
    names.append(name)
for k, (w, h) in enumerate([(28, 28), (32, 32), (500, 375), (375, 500), (224, 300), (641, 227), (64, 48)]):
    yy, xx = np.mgrid[0:h, 0:w]
    photo = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                      ((xx + yy) * 127 // max(w + h, 1)) + 60 * ((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 3) ** 2)], -1)
    add(f"photo_{k}.png", Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8), "RGB"))
    noise = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    add(f"noise_{k}.png", Image.fromarray(noise, "RGB"))
add("gray.png", Image.fromarray(rng.integers(0, 256, size=(40, 30), dtype=np.uint8), "L"))
add("rgba.png", Image.fromarray(rng.integers(0, 256, size=(33, 45, 4), dtype=np.uint8), "RGBA"))
add("palette.png", Image.fromarray(rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8), "RGB").convert("P"))
add("photo.jpg", Image.open(os.path.join(img_dir, "photo_2.png")).convert("RGB"))
for size in (224, 32):
    proc = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                              do_normalize=False)
    tensors = {}
    for name in names:
        img = Image.open(os.path.join(img_dir, name))
        tensors[name] = torch.from_numpy(np.ascontiguousarray(proc(img, return_tensors="np")["pixel_values"][0]))
    save_file(tensors, os.path.join(out, f"preprocess_{size}.safetensors"))
json.dump(names, open(os.path.join(out, "images.json"), "w"))
