let convolutionOperators: [(String, any Operator.Type)] = []
