//! Jobs and tasks as the API shows them: specs, states, verdicts.
