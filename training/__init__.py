"""Offline path: adversarial attacks, dataset building, Detect-ResNet50 finetuning, evaluation."""
