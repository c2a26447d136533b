// The ONNX training operators (domain ai.onnx.preview.training).

let trainingOperators: [(String, any Operator.Type)] = []
