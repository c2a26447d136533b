import DistillCore

/// Finite-difference cases for Sources/DistillCore/Ops/Indexing.swift.
let indexingCases: [GradientCase] = []
