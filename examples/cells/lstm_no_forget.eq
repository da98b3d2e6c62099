# cell: lstm_no_forget
# The original LSTM, without a forget gate (Hochreiter and Schmidhuber 1997, "Long short-term
# memory", Neural Computation 9(8)): the cell adds to itself, the constant error carousel.
input x: 16
state h: 32, c: 32
output h_next

z = W_x @ x + W_h @ h + b
i, g, o = split(z, 3)
c_next = c + sigmoid(i) * tanh(g)
h_next = sigmoid(o) * tanh(c_next)
