# cell: esn
# An echo-state network (Jaeger 2001, "The 'echo state' approach to analysing and training
# recurrent neural networks", GMD Report 148; leaky integrator units as in Jaeger, Lukosevicius,
# Popovici and Siewert 2007, "Optimization and applications of echo state networks with
# leaky-integrator neurons", Neural Networks 20(3)):
#
#   h_t = (1 - a) h_{t-1} + a tanh(W_in x_t + W h_{t-1} + b)
#   y_t = W_out h_t + b_out
#
# The reservoir (W_in, W, b) is random and fixed: 'frozen' parameters get no gradient (the
# weight-gradient GEMMs after the loop are not built) and the optimizers expect none; only the
# readout (W_out, b_out) is trained. Scale W to a spectral radius below 1 before training.
# The leak rate a is a named constant, not a learned parameter.
input x: 16
state h: 32
param W_in: 32 x 16 frozen, W: 32 x 32 frozen, b: 32 frozen
param W_out: 4 x 32
const a: 0.3
output y
next h: h_next

h_next = (1 - a) * h + a * tanh(W_in @ x + W @ h + b)
y = W_out @ h_next + b_out
