# cell: cifg_lstm
# Coupled input and forget gate LSTM (Greff, Srivastava, Koutnik, Steunebrink and Schmidhuber
# 2017, "LSTM: A search space odyssey", IEEE TNNLS 28(10)): the forget gate is 1 - i.
input x: 16
state h: 32, c: 32
output h_next

z = W_x @ x + W_h @ h + b
zi, zg, zo = split(z, 3)
i = sigmoid(zi)
c_next = (1 - i) * c + i * tanh(zg)
h_next = sigmoid(zo) * tanh(c_next)
