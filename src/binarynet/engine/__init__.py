"""Torch-free inference engine for packed BNNs. Never import torch on this path."""
