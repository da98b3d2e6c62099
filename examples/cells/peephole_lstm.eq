# cell: peephole_lstm
# LSTM with peephole connections (Gers, Schraudolph and Schmidhuber 2002, "Learning precise
# timing with LSTM recurrent networks", JMLR 3): the gates see the cell through diagonal
# weights p_i, p_f (the old cell) and p_o (the new cell).
input x: 16
state h: 32, c: 32
output h_next

z = W_x @ x + W_h @ h + b
zi, zf, zg, zo = split(z, 4)
c_next = sigmoid(zf + p_f * c) * c + sigmoid(zi + p_i * c) * tanh(zg)
h_next = sigmoid(zo + p_o * c_next) * tanh(c_next)
