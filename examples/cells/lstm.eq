# cell: lstm
# LSTM with a forget gate (Gers, Schmidhuber and Cummins 2000, "Learning to forget: continual
# prediction with LSTM", Neural Computation 12(10)); one fused 4H pre-activation, gate blocks in
# PyTorch's order i, f, g, o.
input x: 16
state h: 32, c: 32
output h_next

z = W_x @ x + W_h @ h + b
i, f, g, o = split(z, 4)
c_next = sigmoid(f) * c + sigmoid(i) * tanh(g)
h_next = sigmoid(o) * tanh(c_next)
