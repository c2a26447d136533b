import DistillCore

/// Finite-difference cases for Sources/DistillCore/Ops/Convolution.swift.
let convolutionCases: [GradientCase] = []
