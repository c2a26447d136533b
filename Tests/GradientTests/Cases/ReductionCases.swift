import DistillCore

/// Finite-difference cases for Sources/DistillCore/Ops/Reduction.swift.
let reductionCases: [GradientCase] = []
