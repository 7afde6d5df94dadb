-- keys: {p}a {p}b ; args: 1000000 1 1 0
return 123456
