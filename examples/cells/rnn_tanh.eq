# cell: rnn_tanh
# Vanilla recurrent network (Elman 1990, "Finding structure in time", Cognitive Science 14(2)).
input x: 16
state h: 32

h_next = tanh(W_x @ x + W_h @ h + b)
