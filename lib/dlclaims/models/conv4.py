"""Conv-4 of seed 003 (Assaraf 2021, §1): four conv layers, "each comprising BN and MaxPooling".

The seed gives no layer table, but it states two parameter counts for its width-c CNN:
6,666 at c = 4 and 1,558,026 at c = 64. Exactly one plain reading reproduces both:

    block k = 1..4:  Conv2d(3×3, padding 1, with bias) → BatchNorm2d → ReLU → MaxPool2d(2)
                     with c, 2c, 4c, 8c output channels
    head:            global average pool → Linear(8c, 10)

(c = 64: 1,792 + 73,856 + 295,168 + 1,180,160 conv + 1,920 BN + 5,130 linear = 1,558,026.)
So the seed's Conv-4 is not the lottery-ticket Conv-4 (conv 64,64,pool,128,128,pool,
FC 256,256,10; 2.4 M parameters without BN): it has one pool per conv layer and no hidden
fully connected layer. A 32×32 input leaves 2×2 maps after four pools; the parameter-free
step that reduces them to the 8c features the linear layer takes is not stated — we take the
global average. The layers are `cnn.ConvStack`'s, the same stack as the width-c CNN of
`cnn.WidthCNN` in another configuration (pool placement, global pooling).
"""

from __future__ import annotations

from .cnn import NUM_CONV_LAYERS, ConvStack


class Conv4(ConvStack):
    """The seed's width-`width` Conv-4: a max pool after every conv layer, global average (see the
    module docstring for the exact layers)."""

    def __init__(self, width: int = 64, *, in_channels: int = 3, num_classes: int = 10, kernel_size: int = 3):
        super().__init__(width, pooled_layers=tuple(range(NUM_CONV_LAYERS)), global_pool="mean",
                         in_channels=in_channels, num_classes=num_classes, kernel_size=kernel_size)
