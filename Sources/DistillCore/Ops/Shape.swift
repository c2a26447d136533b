let shapeOperators: [(String, any Operator.Type)] = []
