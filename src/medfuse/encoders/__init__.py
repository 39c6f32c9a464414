"""Encoders: one ``nn.Module`` per modality with ``output_dim``, mapping a batch field to
``(B, output_dim)``. Fusion loops over a ``dict[str, nn.Module]`` of them."""
