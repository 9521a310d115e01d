"""Neural-network building blocks shared by the PyTorch model files in ``models/``."""

import torch
from torch import nn


class ConvLSTMCell(nn.Module):
    """A convolutional LSTM cell (Shi et al. 2015): the LSTM's gates are 2-D convolutions over
    the input map and the hidden state, so the state keeps its spatial layout."""

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, x, state):
        h, c = state
        i, f, o, g = torch.chunk(self.gates(torch.cat([x, h], dim=1)), 4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
