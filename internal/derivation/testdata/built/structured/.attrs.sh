declare _under='ok'
declare -a bools=(1  )
declare builder='/bin/bash'
declare -A emptyAttrs=()
declare -a emptyList=()
declare f=
declare floatInt=2
declare intBig=-1294967296
declare -a ints=(0 1 -1 16777217 2147483647 -2147483648 -1294967296 1294967296 1 )
declare -a listOfMixed=('a' 1 '' 1 )
declare name='structured-built'
declare nul=''
declare oneFloat=-2147483648
declare -A outputs=(['dev']='/nix/store/88661lzxpf7bhv1pv1rqpdc3sxyvknw8-structured-built-dev' ['out']='/nix/store/lq1f1finmvk1zgszhhr4km6dmw66r6bp-structured-built' )
declare refs='/nix/store/45mvhcjcrwy8qg0m6icpbgavxgamn76z-dep2'
declare str='a"b\c
de	f ünï'\''q'\'' ctl:'
declare system='x86_64-linux'
declare t=1
