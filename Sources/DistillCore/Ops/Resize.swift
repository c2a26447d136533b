let resizeOperators: [(String, any Operator.Type)] = []
