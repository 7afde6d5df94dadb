-- keys: {p}a {p}b ; args:
return 1
