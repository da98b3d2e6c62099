# cell: mgu
# Minimal gated unit (Zhou, Wu, Zhang and Zhou 2016, "Minimal gated unit for recurrent neural
# networks", International Journal of Automation and Computing 13(3)): one gate, f, both
# resets and updates.
input x: 16
state h: 32

f = sigmoid(W_f @ [h, x] + b_f)
hc = tanh(W_h @ [f * h, x] + b_h)
h_next = (1 - f) * h + f * hc
