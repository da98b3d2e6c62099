# cell: layer_norm_lstm
# A layer-normalized LSTM (Ba, Kiros and Hinton 2016, "Layer Normalization", section 3.1):
# the input and recurrent pre-activations are normalized separately over the features, each with
# its own gain, and so is the cell state before the output tanh.
#
#   graphrnn explain examples/layer_norm_lstm.eq
#   graphrnn train --cell examples/layer_norm_lstm.eq --hidden-size 128
#
# --input-size / --hidden-size override the sizes below (the first input, every state).
input x: 16
state h: 32, c: 32
output h_next
next h: h_next
next c: c_next

z = layer_norm(W_x @ x) * g_x + layer_norm(W_h @ h) * g_h + b
i, f, o, u = split(z, 4)
c_next = sigmoid(f) * c + sigmoid(i) * tanh(u)
h_next = sigmoid(o) * tanh(g_c * layer_norm(c_next) + b_c)
