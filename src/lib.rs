//! wsrelay server library.
