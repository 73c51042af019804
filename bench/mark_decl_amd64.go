package bench

func mark()

func repMovsb(dst, src *byte, n uintptr)

func lockAdds(p *uint64, n uintptr)
