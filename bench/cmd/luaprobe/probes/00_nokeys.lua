-- keys: ; args:
return 1
