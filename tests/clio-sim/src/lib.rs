//! clio-sim
