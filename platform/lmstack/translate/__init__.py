"""Machine translation zh<->en: data, model, decoding, metrics and augmentation for tasks/translate.py."""
